"""The edit job (`vseam edit`): records -> counterfactual question -> SAM mask -> editor -> quality gate.

Output directory (a resumable `vseam.calibrate.rundir.RunDir`):

    config.json          options that determine the results (a re-run with other options is refused)
    edits.jsonl          the manifest: one `EditedPair` per accepted edit (record, counterfactual question, paths,
                         editor, quality metrics), in dataset order
    rejected.jsonl       one row per record that was tried and rejected: stage, reason code, detail, metrics
    edited/<qid>.png     edited images (also kept for rejected edits, for inspection)
    masks/<qid>.png      the region each editor changed (before dilation)
    contact_sheet.png    clean | mask | edited for the first few accepted edits, for humans to look at
    summary.json         counts: accepted per subtype, rejections per reason, what this run did

Every item's files are written before its manifest row, and rows are appended durably, so a killed job re-run with
the same options skips everything already logged and ends with the same manifest as an uninterrupted run.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import pathlib
import re
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from vseam.calibrate.counterfactual import Counterfactual, CounterfactualError, LLMUnavailable, changed_span
from vseam.calibrate.editors import EditError, Editor, choose_editor, masks_for
from vseam.calibrate.masks import save_mask
from vseam.calibrate.quality import REASONS, Thresholds, assess
from vseam.calibrate.records import EditedPair, VQARecord
from vseam.calibrate.rundir import RunDir
from vseam.core.files import atomic_save_image, atomic_write_json

MANIFEST = "edits"
REJECTED = "rejected"


def file_stem(qid: str) -> str:
    """A file-name-safe stem for a question id (a short hash keeps distinct ids distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", qid)
    return safe if safe == qid else f"{safe}-{hashlib.sha1(qid.encode()).hexdigest()[:8]}"


def dataset_counterfactual(record: VQARecord) -> Counterfactual | None:
    """The counterfactual a dataset ships with its record (the `shapes` world does), else None."""
    meta = record.meta or {}
    question = meta.get("counterfactual")
    if not isinstance(question, str) or not question:
        return None
    try:
        old, new = changed_span(record.question, question)
        source, target = (old, new) if record.answer == "yes" else (new, old)
    except CounterfactualError:
        source = target = None
    return Counterfactual(
        question=question,
        level=record.level or "",
        source=source,
        target=target,
        prompt=question,
        method="dataset",
    )


@dataclasses.dataclass
class EditSummary:
    total: int  # records given
    accepted: int  # in the manifest (this run and earlier ones)
    rejected: dict[str, int]  # logged rejections by reason (this run and earlier ones)
    pending: dict[str, int]  # not done, retried by the next run (unreadable image, LLM down)
    processed_this_run: int  # items this run worked on (the rest were already logged)
    accepted_by_subtype: dict[str, int]
    manifest: str
    contact_sheet: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        lines = [f"records {self.total}: accepted {self.accepted}, rejected {sum(self.rejected.values())}, "
                 f"pending {sum(self.pending.values())} (worked on {self.processed_this_run} this run)"]  # fmt: skip
        for sub, n in sorted(self.accepted_by_subtype.items()):
            lines.append(f"  accepted {sub:<10} {n}")
        for reason, n in sorted(self.rejected.items(), key=lambda kv: -kv[1]):
            lines.append(f"  rejected {n:>5}  {reason}")
        for reason, n in sorted(self.pending.items(), key=lambda kv: -kv[1]):
            lines.append(f"  pending  {n:>5}  {reason}")
        lines.append(f"manifest: {self.manifest}")
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        return "\n".join(lines)


class EditJob:
    """Runs the edit pipeline over records into a run directory (see the module docstring).

    rewriter:   record -> Counterfactual (RuleRewriter / LLMRewriter); a dataset's own counterfactual wins
    editors:    name -> Editor (`default_editors`); `editor` forces one of them for every record
    segmenter:  a zero-argument factory of a `BoxSegmenter` (only built when a record needs a mask)
    features:   a `VisionFeatures` for the drift check, or None to skip that check
    """

    def __init__(
        self,
        run: RunDir,
        *,
        rewriter: Callable[[VQARecord], Counterfactual],
        editors: dict[str, Editor],
        segmenter: Callable[[], Any],
        features=None,
        thresholds: Thresholds | None = None,
        editor: str | None = None,
        contact_sheet: int = 8,
        progress: bool = True,
    ):
        self.run = run
        self.rewriter = rewriter
        self.editors = editors
        self._segmenter_factory = segmenter
        self._segmenter = None
        self.features = features
        self.thresholds = thresholds or Thresholds()
        self.forced = editor
        if editor is not None and editor not in editors:
            from vseam.core.errors import UserError

            raise UserError(f"--editor {editor}: not available (have {', '.join(sorted(editors))})")
        self.contact_sheet_size = contact_sheet
        self.progress = progress
        self.manifest = run.log(MANIFEST, key="record.qid")
        self.rejected = run.log(REJECTED, key="id")
        (run.root / "edited").mkdir(exist_ok=True)
        (run.root / "masks").mkdir(exist_ok=True)

    # ---- pieces -------------------------------------------------------------------------------------------------
    def segment(self, image, boxes):
        if self._segmenter is None:
            self._segmenter = self._segmenter_factory()
        return self._segmenter.segment(image, boxes)

    def _reject(self, record: VQARecord, stage: str, reason: str, **extra) -> None:
        self.rejected.append({"id": record.qid, "subtype": record.subtype, "stage": stage, "reason": reason, **extra})

    def process(self, record: VQARecord) -> str:
        """Edit one record; returns "accepted", "rejected" or a pending reason (not logged, retried later)."""
        try:
            cf = dataset_counterfactual(record) or self.rewriter(record)
        except CounterfactualError as e:
            self._reject(record, "counterfactual", f"counterfactual: {e}")
            return "rejected"
        except LLMUnavailable:
            return "language model unavailable"
        try:
            editor = self.editors[self.forced] if self.forced else choose_editor(record, cf, self.editors)
        except EditError as e:
            self._reject(record, "editor", str(e), counterfactual=cf.to_json())
            return "rejected"
        try:
            with Image.open(record.image) as im:
                clean = im.convert("RGB")
        except (OSError, ValueError):
            return "unreadable image"
        try:
            mask, mask_facts = masks_for(editor, record, cf, clean, self.segment)
            edited = editor(clean, mask, record, cf)
            region = editor.region(mask, record, cf)
            allowed = editor.allowed(mask, record, cf)
        except EditError as e:
            self._reject(record, "edit", f"{editor.name}: {e}", counterfactual=cf.to_json())
            return "rejected"
        cosine = self.features.cosine(clean, edited) if self.features is not None else None
        report = assess(clean, edited, allowed, region, self.thresholds, cosine)
        stem = file_stem(record.qid)
        edited_path = self.run.path("edited", f"{stem}.png")
        mask_path = self.run.path("masks", f"{stem}.png")
        atomic_save_image(edited_path, edited)
        save_mask(mask_path, region)
        quality = {
            **report.to_json(),
            "dilation": editor.radius(mask.shape) if editor.uses_mask else 0,
            **mask_facts,
        }
        if not report.passed:
            self._reject(record, "quality", "quality: " + ", ".join(REASONS[r] for r in report.reasons),
                         codes=report.reasons, quality=quality, edited_image=str(edited_path),
                         editor=editor.name, counterfactual=cf.to_json())  # fmt: skip
            return "rejected"
        pair = EditedPair(
            record=record,
            counterfactual=cf.question,
            clean_image=str(pathlib.Path(record.image).resolve()),
            edited_image=str(edited_path.resolve()),
            mask=str(mask_path.resolve()),
            editor=editor.name,
            quality={**quality, "counterfactual": cf.to_json()},
        )
        self.manifest.append(pair.to_json())
        return "accepted"

    # ---- the job ------------------------------------------------------------------------------------------------
    def run_all(self, records: Sequence[VQARecord]) -> EditSummary:
        todo = [r for r in records if r.qid not in self.manifest and r.qid not in self.rejected]
        pending: collections.Counter = collections.Counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="edit", unit="q", dynamic_ncols=True)
        for r in todo:
            outcome = self.process(r)
            if outcome not in ("accepted", "rejected"):
                pending[outcome] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(accepted=len(self.manifest), rejected=len(self.rejected), refresh=False)
        if bar is not None:
            bar.close()
        wanted = {r.qid for r in records}
        sheet = self.write_contact_sheet()
        accepted_rows = [row for row in self.manifest if row["record"]["qid"] in wanted]
        rejected = collections.Counter(row["reason"] for row in self.rejected if row["id"] in wanted)
        summary = EditSummary(
            total=len(records),
            accepted=len(accepted_rows),
            rejected=dict(rejected),
            pending=dict(pending),
            processed_this_run=len(todo),
            accepted_by_subtype=dict(collections.Counter(str(row["record"].get("subtype")) for row in accepted_rows)),
            manifest=str(self.manifest.path),
            contact_sheet=str(sheet) if sheet else None,
        )
        atomic_write_json(self.run.path("summary.json"), summary.to_json())
        return summary

    def pairs(self) -> list[EditedPair]:
        return [EditedPair.from_json(row) for row in self.manifest]

    def write_contact_sheet(self) -> pathlib.Path | None:
        rows = self.manifest.rows()[: self.contact_sheet_size]
        if not rows:
            return None
        path = self.run.path("contact_sheet.png")
        atomic_save_image(path, contact_sheet([EditedPair.from_json(r) for r in rows]))
        return path


def contact_sheet(pairs: Sequence[EditedPair], tile: int = 192) -> Image.Image:
    """One row per pair: clean | mask overlay | edited, with the question and its counterfactual underneath."""
    from PIL import ImageDraw

    caption_h, pad = 30, 4
    rows = []
    for p in pairs:
        with Image.open(p.clean_image) as im:
            clean = im.convert("RGB")
        with Image.open(p.edited_image) as im:
            edited = im.convert("RGB")
        arr = np.asarray(clean).copy()
        if p.mask:
            with Image.open(p.mask) as m:
                mask = np.asarray(m.convert("L").resize(clean.size)) > 127
            arr[mask] = (0.45 * arr[mask] + 0.55 * np.array([255, 0, 200])).astype(np.uint8)
        thumbs = []
        for im in (clean, Image.fromarray(arr), edited):
            im = im.copy()
            im.thumbnail((tile, tile))
            thumbs.append(im)
        rows.append((p, thumbs))
    width = 3 * tile + 4 * pad
    height = sum(max(t.height for t in th) + caption_h + pad for _, th in rows) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for p, thumbs in rows:
        for j, im in enumerate(thumbs):
            sheet.paste(im, (pad + j * (tile + pad), y))
        y += max(t.height for t in thumbs)
        draw.text((pad, y + 2), f"{p.record.qid} [{p.editor}] {p.record.question} ({p.record.answer})", fill=(0, 0, 0))
        draw.text((pad, y + 15), f"-> {p.counterfactual}", fill=(60, 60, 160))
        y += caption_h + pad
    return sheet


# ---- building the job from its configuration ---------------------------------------------------------------------


def make_rewriter(spec) -> tuple[Callable[[VQARecord], Counterfactual], dict]:
    """The counterfactual rewriter of an `EditSpec` (offline rules, or an LLM endpoint) and its run-config entry."""
    from vseam.calibrate.counterfactual import PROMPT_VERSION, LLMRewriter, RuleRewriter
    from vseam.core.files import cache_dir

    if not spec.llm_base_url:
        return RuleRewriter(), {"method": "rules"}
    cache = spec.llm_cache or str(cache_dir("counterfactuals"))
    rw = LLMRewriter(spec.llm_base_url, spec.llm_model, cache, api_key_env=spec.llm_api_key_env)
    return rw, {"method": "llm", "model": spec.llm_model, "prompt_version": PROMPT_VERSION}


def edit_job(dataset, spec, out_dir, *, restart: bool = False, progress: bool = True, features=None,
             extra_config: dict | None = None):
    """(EditJob, LoadResult) for a `DatasetSpec` and an `EditSpec` (`vseam.calibrate.config`), resuming `out_dir`.

    The run config pins everything that determines the edits; `features` (a `VisionFeatures`) replaces loading the
    spec's vision model, e.g. with the calibrated model's own tower."""
    from vseam.calibrate.editors import default_editors
    from vseam.calibrate.masks import BoxSegmenter
    from vseam.calibrate.quality import VisionFeatures

    loaded = dataset.load()
    rewriter, rewriter_cfg = make_rewriter(spec)
    thresholds = Thresholds(min_cosine=spec.min_cosine)
    editors = default_editors(spec.inpaint_model, spec.dilation, steps=spec.inpaint_steps)
    config = {
        "dataset": dataset.name,
        "dataset_options": {k: str(v) for k, v in dataset.loader_options().items()},
        "selection": dataset.selection_json(),
        "editor": spec.editor,
        "sam": {"checkpoint": spec.sam_checkpoint, "type": spec.sam_type},
        "inpaint": {"model": spec.inpaint_model, "steps": spec.inpaint_steps} if spec.inpaint_model else None,
        "dilation": spec.dilation,
        "counterfactual": rewriter_cfg,
        "vision_model": str(pathlib.Path(spec.vision_model).resolve()) if spec.vision_model else None,
        "thresholds": thresholds.to_json(),
        **(extra_config or {}),
    }
    run = RunDir(out_dir, config, restart=restart)
    if features is None and spec.vision_model:
        features = VisionFeatures.from_pretrained(spec.vision_model)
    job = EditJob(
        run,
        rewriter=rewriter,
        editors=editors,
        segmenter=lambda: BoxSegmenter(spec.sam_checkpoint, spec.sam_type),
        features=features,
        thresholds=thresholds,
        editor=None if spec.editor == "auto" else spec.editor,
        contact_sheet=spec.contact_sheet,
        progress=progress,
    )
    return job, loaded

