"""`make demo`: the whole V-SEAM loop on the bundled model organism, offline, on CPU.

    .venv/bin/python -m vseam.demo [--out runs/demo] [--k 4] [--calib-size 4900] [--test-size 700]
        [--test-split test2] [--k-grid 1,2,4,5] [--claim-alpha 0.001] [--fresh]

1. the model organism: a tiny LLaVA-1.5 trained on the synthetic `shapes` world (`vseam/organism/weights`);
2. calibrate on the world's `calib` split (`calibrate --dataset shapes --select-on F`): exact counterfactual
   re-renders (stage 1's `render` editor), Eq-4 triples and activation patching; head attribution on the clean
   images (the authors' Eq-7 split) of every calibration question the model answers wrong and of at most
   `--max-correct` right ones per subtype; K (from `--k-grid`, cut to the heads the organism can lose at random:
   K ≤ 5, 10 heads) and the strength α of each level's profile chosen on a held-out part of the calib split; the
   paper-exact profiles (the fixed `--k`, α = 1) beside them;
   `vseam serve` starts first, in the background, with a placeholder profile and room for more, so vLLM loads
   while the demo calibrates; the model passes of calibration run on `--workers` Ray workers (default 2, one per
   core: the same batches, the same profiles);
3. the paper's Table-3 strategies of each level's chosen profile (`vseam eval strategies`);
4. once the server is up, all strategy profiles and the paper-exact profiles are loaded through its admin route
   (`POST /v1/head_profiles`; per-request mode);
5. evaluate through the OpenAI API on the held-out `test2` split (never answered before the third look at the
   claim, docs/claim-third-look.md; `test` holds the model card's tables and the first two looks): original vs
   w/o negative vs w/o positive vs random remove vs rescaling (+ rescaling at the paper's fixed K and α = 1), each level answered with its own
   level's profiles, with the exact McNemar test and paired-bootstrap confidence intervals (and the paper's
   Table-18 fold t-test, labelled as such) (`vseam eval`'s GQA task: 7 subtypes, 3 levels);
6. stop the server, print the table and the verdict on the paper's claim (rescaling ahead overall at McNemar
   p < `--claim-alpha`, no level behind) and, as the last line, one JSON object with every figure.

Every step writes under `--out` and resumes: a re-run reuses the calibration run dir and the eval answer cache.
The held-out splits are never used for any choice: K and α are chosen on part of the `calib` split, the organism
was selected on `val`, and the K grid's cut comes from the random-removal curve on `val`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import sys
import time

from vseam.serve.launch import ServerError, cpu_flags, free_port, start, stop, tail, wait_healthy
from vseam.core.vocab import SEMANTIC_LEVELS

SERVED_NAME = "shapes-llava"
BUDGET_S = 10 * 60
#: the extra arm: each level's heads at the paper's fixed K and full strength (Eq 10)
PAPER_ARM = "rescaling (paper: fixed K, α=1)"


def demo_k_grid() -> tuple[int, ...]:
    """The K values the demo tries: the calibrator's default grid without the sizes whose positive and negative
    sets together touch more heads than the organism can lose at random within point 1 of issue 15
    (`robustness.HEAD_BUDGET`, measured on val), plus the budget's own K."""
    from vseam.core.defaults import DEFAULT_K_GRID
    from vseam.organism.robustness import HEAD_BUDGET

    cap = HEAD_BUDGET // 2
    return tuple(sorted({k for k in DEFAULT_K_GRID if k <= cap} | {cap}))


def default_workers() -> int:
    """2 Ray workers for calibration's model passes (torch runs one thread each, so both cores work), or 0 (the
    demo's own process) on a single core or without Ray, said once."""
    import importlib.util

    if (os.cpu_count() or 1) < 2:
        return 0
    if importlib.util.find_spec("ray") is None:
        print("note: Ray is not installed (pip install 'vseam[ray]'), so calibration runs in this process on one "
              "core; the profiles are the same, the demo slower", flush=True)
        return 0
    return 2


class DemoError(RuntimeError):
    pass


class Steps:
    """Numbered steps with wall-clock times."""

    def __init__(self, total: int):
        self.total, self.n, self.t0, self.times = total, 0, time.time(), {}
        self._cur, self._start = None, None

    def start(self, title: str) -> None:
        self.finish()
        self.n += 1
        self._cur, self._start = title, time.time()
        print(f"\n=== [{self.n}/{self.total}] {title}  (t={self.elapsed():.0f}s)", flush=True)

    def finish(self) -> None:
        if self._cur is not None:
            self.times[self._cur] = round(time.time() - self._start, 1)
            print(f"--- done in {self.times[self._cur]:.0f}s", flush=True)
            self._cur = None

    def elapsed(self) -> float:
        return time.time() - self.t0


def calibrate_step(argv: list[str]) -> None:
    """`calibrate ARGV` in this process (the same flags and defaults as the command line): the calibration stage
    functions are called directly.

    Torch runs single-threaded (OMP_NUM_THREADS, default 1): on 2 shared cores the tiny model is several times faster
    that way than with threads that wait on each other.
    """
    import torch

    from vseam.calibrate.cli import build_parser, calibrate_config
    from vseam.calibrate.pipeline import calibrate
    from vseam.core.errors import USER_ERRORS

    print("$ calibrate " + " ".join(_short(c) for c in argv), flush=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        calibrate(calibrate_config(build_parser().parse_args(argv)))
    except USER_ERRORS as e:
        raise DemoError(f"calibrate failed: {e}") from None


def _short(arg: str) -> str:
    try:
        return os.path.relpath(arg) if os.path.isabs(arg) and os.path.exists(arg) else arg
    except ValueError:
        return arg


# ---- the server ---------------------------------------------------------------------------------------------------


#: profile slots the demo's server reserves (its placeholder + every strategy and paper profile, with room to spare)
PROFILE_SLOTS = 32


def placeholder_profile(model: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """A profile with no head for `model`: the one profile the server needs to start before calibration has
    written the real ones."""
    from vseam.core.families import fingerprint_of
    from vseam.head_profiles import HeadProfile, Provenance

    prof = HeadProfile(name="shapes-unedited", fingerprint=fingerprint_of(str(model)), scope={"level": "all"}, k=0,
                       provenance=Provenance.new("hand-written", notes="no head: lets the demo's server start while "
                                                 "calibration runs; the calibrated profiles are loaded later"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.model_dump_json(indent=2, exclude_none=True) + "\n")
    return path


class Server:
    """`vseam serve` started in the background (`background_server`): it loads while the demo calibrates; `ready`
    waits for /health, `load` adds profiles through the admin route (POST /v1/head_profiles)."""

    def __init__(self, base: str, proc, log: pathlib.Path, admin_key: str, t0: float):
        self.base, self.proc, self.log, self.admin_key, self.t0 = base, proc, log, admin_key, t0

    def ready(self, timeout: float = 420) -> str:
        def waiting(waited: float) -> None:
            print(f"  waiting for the server ({waited:.0f}s) ... {_last_line(self.log)}", flush=True)

        try:
            wait_healthy(self.base, self.proc, self.log, timeout=timeout, name="vseam serve", waiting=waiting)
        except ServerError as e:
            raise DemoError(str(e)) from None
        print(f"  server up at {self.base} ({time.time() - self.t0:.0f}s after it was started, pid {self.proc.pid})",
              flush=True)
        return self.base

    def load(self, profiles: list[pathlib.Path]) -> None:
        import httpx

        for path in profiles:
            r = httpx.post(f"{self.base}/v1/head_profiles", content=path.read_bytes(), timeout=60,
                           headers={"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"})
            if r.status_code != 200:
                raise DemoError(f"the server refused profile {_short(str(path))}: HTTP {r.status_code} {r.text[:300]}")
        print(f"  loaded {len(profiles)} profiles through POST /v1/head_profiles", flush=True)


@contextlib.contextmanager
def background_server(model: pathlib.Path, placeholder: pathlib.Path, log: pathlib.Path, port: int):
    """`vseam serve` in its own process group, started now with only `placeholder` and room for more profiles (the
    admin routes on, behind a key made here); yields a `Server` at once; always stopped after."""
    import secrets

    key = secrets.token_hex(16)
    cmd = [sys.executable, "-m", "vseam.serve.cli", str(model), "--head-profile", str(placeholder),
           "--max-head-profiles", str(PROFILE_SLOTS), "--admin-key", key,
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), *cpu_flags()]
    shown = ["<key>" if c == key else _short(c) for c in cmd[1:]]
    print("$ " + " ".join(shown) + f"   (log: {_short(str(log))}; loads in the background)", flush=True)
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    base, proc = start(cmd, log, env, port=port)
    try:
        yield Server(base, proc, log, key, time.time())
    finally:
        stop(proc)
        print("  server stopped", flush=True)


def _last_line(path: pathlib.Path) -> str:
    return tail(path, 1).strip()[-100:]


def level_profiles(folder: pathlib.Path, report: pathlib.Path) -> dict[str, pathlib.Path]:
    """Each level's own profile; a level for which no head qualified (calibrate wrote no profile) is served the
    combined `shapes-all` profile instead."""
    combined = folder / "shapes-all.json"
    if not combined.exists():
        raise DemoError(f"calibrate wrote no profile in {folder} (see {report})")
    out = {}
    for lv in SEMANTIC_LEVELS:
        own = folder / f"shapes-{lv}.json"
        if own.exists():
            out[lv] = own
        else:
            print(f"  no profile for the {lv} level (see {_short(str(report))}): its questions use "
                  f"{combined.name}", flush=True)
            out[lv] = combined
    return out


# ---- evaluation ---------------------------------------------------------------------------------------------------


def evaluate(base_url: str, manifests: dict[str, pathlib.Path], paper: dict[str, str] | None, records,
             out: pathlib.Path, concurrency: int, task: str = "gqa", source: str = "shapes:test2",
             claim_alpha: float = 0.001) -> dict:
    """`vseam eval TASK --strategies ...` through the API: with one manifest per level (`attribute=...` etc.) each
    question is answered with its own level's profiles; with a single `None: manifest` entry every question uses
    that manifest's profiles. `paper` (level -> profile name) adds the paper-exact arm.

    The eval task's own functions do the work (arms from the manifests, requests, parsing, metrics, tests); only the
    records come from the demo's files.
    """
    from vseam.benchmarks.client import Endpoint
    from vseam.benchmarks.run import Arm, EvalConfig, arms_for, evaluate as run_eval
    from vseam.core.families import FAMILIES

    specs = [str(p) if lv is None else f"{lv}={p}" for lv, p in manifests.items()]
    arms, reference, _ = arms_for(specs)
    if paper:
        arms.append(Arm(label=PAPER_ARM, profile="per level", by_level=dict(paper)))
    cfg = EvalConfig(task=task, endpoint=Endpoint(base_url=base_url, model=SERVED_NAME), arms=arms, out_dir=out,
                     reference=reference, concurrency=concurrency, claim_alpha=claim_alpha)
    info = {"files": [source], "images": None, "excluded": {}, "limit": None}
    return run_eval(cfg, records, FAMILIES["llava"], data_info=info)


#: shapes-COCO-QA question type -> the semantic level whose profiles answer it (colour is an attribute, naming an
#: object is object recognition, "where" is spatial)
COCOQA_LEVEL = {"color": "attribute", "object": "object", "location": "relation"}


def evaluate_benchmarks(base_url: str, manifests: dict[str, pathlib.Path], bench: pathlib.Path, out: pathlib.Path,
                        concurrency: int, steps: "Steps") -> dict:
    """shapes-POPE (every split, the object level's strategies) and shapes-COCO-QA (each type with its level's
    strategies) through the API; returns {"pope": report, "cocoqa": {type: report}}."""
    from vseam.calibrate.datasets import load_dataset

    steps.start("evaluate shapes-POPE (random / popular / adversarial) x 5 strategies through the API")
    pope = load_dataset("pope", path=str(bench / "pope"), images=str(bench / "pope" / "images")).records
    res = {"pope": evaluate(base_url, {None: manifests["object"]}, None, pope, out / "pope", concurrency,
                            task="pope", source="shapes-POPE")}
    steps.start("evaluate shapes-COCO-QA (color / object / location) x 5 strategies through the API")
    cocoqa = load_dataset("cocoqa", path=str(bench / "cocoqa"), images=str(bench / "cocoqa" / "images")).records
    res["cocoqa"] = {}
    for kind, level in COCOQA_LEVEL.items():
        recs = [r for r in cocoqa if r.subtype == kind]
        res["cocoqa"][kind] = evaluate(base_url, {None: manifests[level]}, None, recs, out / "cocoqa" / kind,
                                       concurrency, task="cocoqa", source=f"shapes-COCO-QA {kind}")
    return res


def _paired(report: dict) -> dict:
    tests = (report.get("paired_tests") or {}).get("categories", {})
    return {cat: {"diff_pp": round(t["original"]["diff_pp"], 2),
                  "ci95_pp": [round(t["original"]["ci_low_pp"], 2), round(t["original"]["ci_high_pp"], 2)],
                  "mcnemar_p": t["original"]["p"], "only_rescaling_right": t["original"]["ref_only"],
                  "only_original_right": t["original"]["base_only"]}
            for cat, t in tests.items() if "original" in t}


def _pct(v):
    return None if v is None else round(100 * v, 2)


def benchmark_json(bench: dict) -> dict:
    """shapes-POPE per split (accuracy, precision, recall, F1, yes-ratio per strategy) and shapes-COCO-QA per type
    (accuracy per strategy), with rescaling − original tests."""
    pope = bench["pope"]
    out = {"pope": {label: {split: {k: _pct(m.get(k)) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
                            for split, m in per.items()} for label, per in pope["metrics"].items()},
           "pope_rescaling_minus_original": _paired(pope), "cocoqa": {}, "cocoqa_rescaling_minus_original": {}}
    for kind, rep in bench["cocoqa"].items():
        out["cocoqa"][kind] = {label: _pct(row.get(kind)) for label, row in rep["headline"].items()}
        out["cocoqa_rescaling_minus_original"][kind] = _paired(rep).get(kind)
    return out


def headline_json(report: dict, profiles: dict[str, pathlib.Path], seconds: float, split: str = "test2",
                  k_grid=()) -> dict:
    """The demo's figures in one object: held-out accuracy per strategy and level, rescaling − original per level
    and overall (McNemar p, 95% paired-bootstrap CI), the report's verdict on the paper's claim, the K and α chosen
    for each level's profile."""
    from vseam.head_profiles import load_profile

    acc = {label: {k: (None if v is None else round(100 * v, 2)) for k, v in row.items()}
           for label, row in report["headline"].items()}
    diff = _paired(report)
    chosen = {}
    for lv, path in profiles.items():
        prof = load_profile(path)
        sel = prof.provenance.selection
        chosen[lv] = {"profile": prof.name, "k": prof.k, "strength": prof.alpha,
                      "heads_touched": prof.num_heads_selected if prof.alpha > 0 else 0,
                      "held_out_calib_accuracy": None if sel is None else
                      {"unedited": sel.accuracy_unedited, "chosen": sel.accuracy_chosen, "n": sel.held_out_questions}}
    return {"demo": "vseam", "seconds": round(seconds, 1), "test_split": split, "k_grid": list(k_grid),
            "test_questions": report["data"]["records"],
            "accuracy_pct": acc, "rescaling_minus_original": diff,
            "claim": report["claim"], "chosen": chosen,
            "requests_failed": report["requests"]["failed"]}


# ---- the demo -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from vseam.calibrate.cli import parse_k_grid
    from vseam.calibrate.datasets.shapes import EVAL_SPLITS

    p = argparse.ArgumentParser(prog="python -m vseam.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo", help="working directory (resumable)")
    p.add_argument("--k", type=int, default=4, help="the paper-exact profiles' heads per set (fixed in advance)")
    p.add_argument("--select-on", type=float, default=0.3,
                   help="share of the calib split held out to choose each profile's K and strength α (0: no choice, "
                        "K = --k and α = 1 as in the paper)")
    p.add_argument("--calib-size", type=int, default=4900,
                   help="records of the calib split to calibrate on (the most that fits the demo's 10 minutes with "
                        "--max-correct: a few hundred wrongly answered inputs per attribute / object level for the "
                        "Eq-7 split, and about 500 held-out questions per level for choosing K and α)")
    p.add_argument("--max-correct", type=int, default=100,
                   help="attribute every wrongly answered calib question and at most this many right ones per "
                        "subtype (calibrate --max-correct; 0: attribute every question)")
    p.add_argument("--test-size", type=int, default=700, help="held-out questions to evaluate")
    p.add_argument("--test-split", choices=EVAL_SPLITS, default="test2",
                   help="the held-out split evaluated (test2, default: fresh for the third look at the claim; test: "
                        "the model card's split and the first two looks, docs/claim-preregistration.md)")
    p.add_argument("--k-grid", type=parse_k_grid, default=None, metavar="K,K,...",
                   help="the K values tried for each level's profile (default: the calibrator's grid cut to K ≤ "
                        "HEAD_BUDGET / 2, the heads the organism can lose at random on val, i.e. 1,2,4,5)")
    p.add_argument("--claim-alpha", type=float, default=0.001,
                   help="level at which the paper's claim is judged: rescaling ahead of the unedited model on the test "
                        "questions with McNemar p below it, and no level behind (the issue's 0.001; lower it for a "
                        "second look at data that holds the first, see docs/claim-preregistration.md)")
    p.add_argument("--patching", type=int, default=16, help="triples to activation-patch (heatmaps)")
    p.add_argument("--bench-images", type=int, default=60,
                   help="scenes of shapes-POPE (4 questions per split each) and shapes-COCO-QA (3 questions each); "
                        "0 skips both")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument("--workers", type=int, default=None,
                   help="run calibrate's model passes on N Ray workers (calibrate --workers; default 2 when the "
                        "machine has 2 or more cores and Ray is installed, else 0: in the demo's own process); the "
                        "same batches, so on a 2-core machine the same profiles byte for byte")
    p.add_argument("--calibrate-arg", action="append", default=[], metavar="ARG",
                   help="extra flag for the calibrate command (repeatable), e.g. --calibrate-arg=--method=atp")
    p.add_argument("--model", help="another llava-layout checkpoint instead of the organism (for trying the loop)")
    args = p.parse_args(argv)
    if not 0 < args.claim_alpha < 1:
        p.error(f"--claim-alpha {args.claim_alpha}: expected a level in (0, 1)")

    from vseam.organism import CARD_JSON, weights_dir

    k_grid = args.k_grid or demo_k_grid()
    if args.workers is None:
        args.workers = default_workers()
    out = pathlib.Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    images = out / "images"
    steps = Steps(9 if args.bench_images else 7)
    try:
        # 1 ------------------------------------------------------------------------------------------------------
        steps.start("model organism")
        if args.model:
            weights = pathlib.Path(args.model).resolve()
            print(f"  {weights} (given with --model)")
        else:
            weights = weights_dir()
            card = json.loads(CARD_JSON.read_text())
            held = card["held_out"]
            print(f"  {weights} ({card['parameters'] / 1e6:.1f}M parameters, {card['weights_mb']:.0f} MB)")
            print("  held-out accuracy on the model card: "
                  + ", ".join(f"{k} {v * 100:.0f}%" for k, v in held["subtype"].items())
                  + f"; overall {held['overall'] * 100:.1f}%")

        # 2 ------------------------------------------------------------------------------------------------------
        steps.start("start vseam serve in the background (vLLM loads while the demo calibrates)")
        placeholder = placeholder_profile(weights, out / "serve" / "shapes-unedited.json")
        with background_server(weights, placeholder, out / "serve.log", free_port()) as server:
            # 3 --------------------------------------------------------------------------------------------------
            steps.start("calibrate on shapes/calib (exact re-rendered counterfactuals -> Eq-4 triples -> heads)")
            calib = out / "calibrate"
            calibrate_step(["--dataset", "shapes", "--data", "calib", "--images", str(images),
                            "--dataset-option", f"size={args.calib_size}", "--model", str(weights), "--out",
                            str(calib), "--k", str(args.k),
                            *(["--select-on", str(args.select_on), "--select-only", ",".join(SEMANTIC_LEVELS),
                               "--k-grid", ",".join(map(str, k_grid))] if args.select_on > 0 else []),
                            *(["--max-correct", str(args.max_correct)] if args.max_correct > 0 else []),
                            *(["--workers", str(args.workers)] if args.workers > 0 else []),
                            "--patching", str(args.patching), "--batch", "8", *args.calibrate_arg])
            profiles = level_profiles(calib / "profiles", calib / "report.md")
            # the paper-exact profiles (fixed K, α = 1) are the served ones themselves when nothing was chosen
            paper = ({lv: calib / "profiles" / "paper" / p.name for lv, p in profiles.items()}
                     if args.select_on > 0 else {})

            # 4 --------------------------------------------------------------------------------------------------
            steps.start("Table-3 strategies of each level's profile")
            from vseam.benchmarks.strategies import read_manifest, write_strategies

            manifests = {}
            for lv, prof in profiles.items():
                manifests[lv] = write_strategies(prof, out / "strategies" / lv, seed=0)
                print(f"  {lv}: " + ", ".join(f"{s} = {n}" for s, n in read_manifest(manifests[lv]).items()),
                      flush=True)
            # one file per profile name (levels served the combined profile share its strategy profiles)
            served = sorted({p.name: p for d in sorted((out / "strategies").iterdir()) for p in d.glob("*.json")
                             if p.name != "strategies.json"}.values())
            served += sorted(set(paper.values()))

            # 5 --------------------------------------------------------------------------------------------------
            steps.start(f"vseam serve: wait until it is up, load {len(served)} profiles (per request)")
            from vseam.calibrate.datasets import load_dataset

            test = load_dataset("shapes", path=args.test_split, images=str(images), size=args.test_size).records
            bench_dir, bench = out / "benchmarks", None
            if args.bench_images:
                from vseam.calibrate.datasets.shapes.benchmarks import write_all

                written = write_all(bench_dir, n_images=args.bench_images)
                print(f"  shapes-POPE {written['pope']['questions']}, shapes-COCO-QA "
                      f"{written['cocoqa']['questions']} questions in {_short(str(bench_dir))}", flush=True)
            base, server_pid = server.ready(), server.proc.pid
            server.load(served)

            # 6-8 ------------------------------------------------------------------------------------------------
            steps.start(f"evaluate {len(test)} held-out questions x 5 strategies through the OpenAI API")
            from vseam.head_profiles import load_profile

            paper_names = {lv: load_profile(p).name for lv, p in paper.items()} or None
            report = evaluate(base, manifests, paper_names, test, out / "eval", args.concurrency,
                              source=f"shapes:{args.test_split}", claim_alpha=args.claim_alpha)
            if args.bench_images:
                bench = evaluate_benchmarks(base, manifests, bench_dir, out / "eval", args.concurrency, steps)
            steps.start("stop the server")
        steps.finish()

        # 6 ------------------------------------------------------------------------------------------------------
        print("\n" + (out / "eval" / "report.md").read_text())
        if bench:
            print("\n## shapes-POPE (object-level strategies)\n\n" + (out / "eval" / "pope" / "report.md").read_text())
            for kind in COCOQA_LEVEL:
                print(f"\n## shapes-COCO-QA {kind} ({COCOQA_LEVEL[kind]}-level strategies)\n\n"
                      + (out / "eval" / "cocoqa" / kind / "report.md").read_text())
        total = steps.elapsed()
        summary = {"seconds": round(total, 1), "steps": steps.times, "k": args.k, "held_out": len(test),
                   "report": str(out / "eval" / "report.json"), "server_pid": server_pid,
                   "profiles": {lv: str(p) for lv, p in profiles.items()},
                   "paper_profiles": {lv: str(p) for lv, p in paper.items()}}
        (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
        per_step = ", ".join(f"{k.split()[0]} {v:.0f}s" for k, v in steps.times.items())
        print(f"demo finished in {total / 60:.1f} min ({per_step})")
        if total > BUDGET_S:
            print(f"note: over the {BUDGET_S // 60}-minute budget on this machine")
        figures = headline_json(report, profiles, total, args.test_split, k_grid)
        from vseam.benchmarks.stats import claim_sentence

        print("the paper's claim on the test questions: " + claim_sentence(figures["claim"]))
        if bench:
            figures["benchmarks"] = benchmark_json(bench)
        print(json.dumps(figures, sort_keys=False))
        return 0
    except DemoError as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; run `make demo` again to resume from {out}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
