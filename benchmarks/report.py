"""The report of an evaluation run: `report.json` (every number), `report.md` (tables), `report.png` (bar chart)."""

from __future__ import annotations

import json
import math
import pathlib

from vseam.benchmarks.stats import stars

JSON_FILE, MARKDOWN_FILE, CHART_FILE = "report.json", "report.md", "report.png"


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def num(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def p_value(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 1e-300" if p == 0 else f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def headline_table(report: dict) -> list[str]:
    head = report["headline"]
    labels = list(head)
    cols: list[str] = []
    for row in head.values():
        cols += [c for c in row if c not in cols]
    profile_of = {a["label"]: a["profile"] if not a.get("by_level") else
                  ", ".join(f"{lv}: {p}" for lv, p in a["by_level"].items()) for a in report["arms"]}
    rows = []
    for lb in labels:
        name = lb if profile_of.get(lb, lb) == lb else f"{lb} (`{profile_of[lb]}`)"
        rows.append([name] + [pct(head[lb].get(c)) for c in cols])
    return _table(["accuracy (%)"] + cols, rows)


def pope_table(report: dict) -> list[str]:
    rows = []
    for lb, m in report["metrics"].items():
        for split, v in m.items():
            rows.append([split, lb, num(v["accuracy"]), num(v["precision"]), num(v["recall"]), num(v["f1"]),
                         num(v["yes_ratio"]), str(v["unparsed"]), str(v["failed"]), str(v["n"])])
    return _table(["split", "profile", "acc", "precision", "recall", "F1", "yes-ratio", "unparsed", "failed", "n"],
                  rows)


def counts_table(report: dict) -> list[str]:
    rows = []
    for lb, m in report["metrics"].items():
        block = m.get("all", {})
        rows.append([lb, str(block.get("n", "–")), str(block.get("answered", "–")), str(block.get("unparsed", "–")),
                     str(block.get("failed", "–"))])
    return _table(["profile", "completed", "parsed", "unparsed", "failed"], rows)


def significance_table(sig: dict) -> list[str]:
    rows = []
    for cat, by_base in sig["categories"].items():
        for base, s in by_base.items():
            rows.append([cat, base, num(s["mean_delta_pp"], 2), num(s["sd_pp"], 2), num(s["t"], 2), p_value(s["p"]),
                         s["significance"]])
    return _table(["category", "baseline", "mean Δ (pp)", "SD (pp)", "t", "p", "sig."], rows)


def paired_table(tests: dict) -> list[str]:
    rows = []
    for cat, by_base in tests["categories"].items():
        for base, t in by_base.items():
            rows.append([cat, base, str(t["n"]), f"{t['diff_pp']:+.2f}", f"[{t['ci_low_pp']:+.2f}, {t['ci_high_pp']:+.2f}]",
                         f"{t['ref_only']} / {t['base_only']}", p_value(t["p"]), stars(t["p"])])
    return _table(["category", "baseline", "n", "Δ accuracy (pp)", "95% CI (pp)", "only ref / only base right",
                   "McNemar p", "sig."], rows)


def markdown(report: dict) -> str:
    req = report["requests"]
    lines = [
        f"# {report['task']} — {report['model']}",
        "",
        f"- server: {report['base_url']} (profile chosen by {report['profile_via']}), family {report['family']}",
        f"- items: {report['data']['records']} x {len(report['arms'])} profiles = {req['items']}; distinct requests: "
        f"{req['unique']} ({req['from_cache']} from cache, {req['asked']} asked, {req['failed']} failed)",
        f"- generated {report['created']} by vseam {report['vseam_version']}",
    ]
    excluded = report["data"].get("excluded")
    if excluded:
        lines.append("- left out by the task: " + ", ".join(f"{v} × {k}" for k, v in excluded.items()))
    skipped = report["data"].get("skipped")
    if skipped:
        lines.append("- skipped by the loader: " + ", ".join(
            f"{v['count']} × {k} (e.g. {', '.join(v['examples'][:3])})" for k, v in skipped.items()))
    lines += ["", "## Accuracy", ""] + headline_table(report)
    lines += ["", "Unparsed replies count as wrong in every accuracy; failed requests are left out.", ""]
    lines += counts_table(report)
    if report["task"] == "pope":
        lines += ["", "## POPE per split", ""] + pope_table(report)
    tests = report.get("paired_tests")
    if tests:
        c = tests["config"]
        lines += ["", f"## Significance: {c['reference']} − baseline (paired, per question)", "",
                  f"Exact McNemar test on the questions only one of the two answers right; 95% CI of the accuracy "
                  f"difference from {c['resamples']} paired bootstrap resamples of the questions (seed {c['seed']}). "
                  "*** p < 0.001, ** p < 0.01, * p < 0.05.", ""]
        lines += paired_table(tests)
    claim = report.get("claim")
    if claim:
        from vseam.benchmarks.stats import claim_sentence

        lines += ["", "## The paper's claim", "",
                  f"{claim['reference']} ahead of {claim['baseline']} over all questions with exact McNemar p < "
                  f"{claim['alpha']:g}, and no category behind it:", "", f"**{claim_sentence(claim)}**"]
    sig = report.get("significance")
    if sig:
        c = sig["config"]
        lines += ["", f"## Paper Table-18 procedure: {c['reference']} − baseline", "",
                  f"{c['folds']} bootstrap folds of {c['fold_size']} items per category (seed {c['seed']}, "
                  f"{c['resampling']}); paired t-test on the fold accuracies, as in the paper. The folds resample "
                  "the same questions, so these p-values shrink with the number of folds, not with the data: read "
                  "the paired test above.", ""]
        lines += significance_table(sig)
    if req["first_errors"]:
        lines += ["", "## First errors", ""] + [f"- {e}" for e in req["first_errors"]]
    return "\n".join(lines) + "\n"


def bar_chart(report: dict, path: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    head = report["headline"]
    labels = list(head)
    cols: list[str] = []
    for row in head.values():
        cols += [c for c in row if c not in cols]
    x = np.arange(len(cols))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(cols) + 2) + 2.0, 3.6), dpi=110)
    for i, lb in enumerate(labels):
        vals = [100 * head[lb][c] if head[lb].get(c) is not None else 0.0 for c in cols]
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=lb)
    ax.set_xticks(x, cols, rotation=20 if len(cols) > 5 else 0)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['task']} — {report['model']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE, "chart": out / CHART_FILE}
    report["files"] = {k: p.name for k, p in paths.items()}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(markdown(report))
    bar_chart(report, paths["chart"])
    return paths
