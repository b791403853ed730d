"""What a calibration run is asked to do, as plain objects: built once from the command line (`vseam.calibrate.cli`)
or directly from Python (the demo, the tests), then read by the stages. Validation happens here, with messages that
name the command-line flag.

* `DatasetSpec` — which records: dataset, files, loader options and the shared selection options;
* `EditSpec` — how stage 1 edits them: editor, SAM, inpainting model, counterfactual rewriter, quality gate;
* `Stage2Config` — patching, head attribution (which inputs, which method), K and strength, profile names;
* `CalibrateConfig` — the model and the run directory around the three.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from vseam.calibrate.inputs import DEFAULT_AGGREGATE, DEFAULT_SPLIT
from vseam.core.defaults import AUTO_EXACT_MAX_HEADS, DEFAULT_BATCH, DEFAULT_K, DEFAULT_K_GRID
from vseam.core.errors import UserError
from vseam.core.vocab import ALL, SEMANTIC_LEVELS, SUBTYPE_LEVEL

EDITOR_CHOICES = ("auto", "recolor", "remove", "mirror", "diffusion", "render")
METHODS = ("auto", "exact", "atp", "naive")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Which records to load (`vseam.calibrate.datasets.load_dataset`) and which of them to keep."""

    name: str
    data: str | None = None  # --data: file, directory (or the split of the `shapes` world)
    images: str | None = None
    scene_graphs: str | None = None
    options: tuple[str, ...] = ()  # --dataset-option KEY=VALUE, as given
    subtypes: tuple[str, ...] | None = None
    limit: int | None = None
    fraction: float | None = None  # a seeded share of the records at load time (`vseam edit`)
    seed: int = 0
    balance: bool = False

    def loader_options(self) -> dict[str, Any]:
        """Options for the dataset's own loader: --dataset-option KEY=VALUE plus --data/--images/--scene-graphs."""
        return loader_options(self.options, path=self.data, images=self.images, scene_graphs=self.scene_graphs)

    def load(self):
        """The records (a `LoadResult`): yes/no questions, with boxes unless the dataset is the `shapes` world."""
        from vseam.calibrate.datasets import load_dataset

        try:
            return load_dataset(
                self.name, subtypes=list(self.subtypes) if self.subtypes else None, binary_only=True,
                require_boxes=self.name != "shapes", balance=self.balance, fraction=self.fraction, limit=self.limit,
                seed=self.seed, **self.loader_options(),
            )
        except TypeError as e:  # an option the loader does not take
            raise UserError(f"dataset {self.name}: {e}") from None

    def selection_json(self) -> dict:
        return {"subtypes": list(self.subtypes) if self.subtypes else None, "limit": self.limit,
                "fraction": self.fraction, "seed": self.seed, "balance": self.balance}


def loader_options(items, **named) -> dict[str, Any]:
    """KEY=VALUE strings (dashes in keys become underscores) plus the named options that are set."""
    opts: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--dataset-option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = v
    opts.update({k: v for k, v in named.items() if v})
    return opts


@dataclasses.dataclass(frozen=True)
class EditSpec:
    """How stage 1 makes the counterfactual images (`vseam edit`, and stage 1 of `calibrate`)."""

    editor: str = "auto"
    sam_checkpoint: str | None = None
    sam_type: str = "vit_t"
    inpaint_model: str | None = None
    inpaint_steps: int = 25
    dilation: int | None = None
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_cache: str | None = None
    vision_model: str | None = None  # whose vision tower scores edit drift in the quality gate (None: skipped)
    min_cosine: float = 0.85
    contact_sheet: int = 8

    def __post_init__(self):
        if self.editor not in EDITOR_CHOICES:
            raise UserError(f"--editor {self.editor}: choose one of {', '.join(EDITOR_CHOICES)}")
        if bool(self.llm_base_url) != bool(self.llm_model):
            raise UserError("--llm-base-url and --llm-model go together")


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Patching, head attribution and profiles (the options that determine the profiles of a run)."""

    method: str = "auto"  # auto | exact | atp | naive
    refine: int | None = None  # AtP: re-score this many candidates per set and group exactly (None: 3K)
    k: int = DEFAULT_K
    fraction: float = 1.0
    seed: int = 0
    batch: int = DEFAULT_BATCH  # questions per attribution chunk
    patching: int = 16  # triples to patch (0: no patching)
    name_prefix: str = "gqa"
    per_subtype: bool = False
    attribute_on: str = DEFAULT_SPLIT  # clean | clean+edited | eq4-pairs (vseam.calibrate.inputs)
    aggregate: str = DEFAULT_AGGREGATE  # mean (Eq 7) | gain (released script)
    select_on: float | None = None  # held-out fraction for choosing K and α (None: K = k, α = 1)
    k_grid: tuple[int, ...] = DEFAULT_K_GRID
    #: --select-on: the level at which the chosen (K, α) must beat α = 0 on the held-out questions (Bonferroni over
    #: the candidates); 1 keeps the plain argmax
    select_significance: float = 0.05
    #: attribute every incorrectly answered question and at most this many correctly answered ones per subtype
    #: (a seeded sample after one unedited forward pass over all of them); None: every question
    max_correct: int | None = None
    #: --select-on: choose K and α only for these profile groups (empty: every group); the others keep K = k, α = 1
    select_only: tuple[str, ...] = ()

    #: the fields written to the run directory's config.json (a resumed run must match them)
    KEYS = ("method", "refine", "k", "fraction", "seed", "batch", "patching", "name_prefix", "per_subtype",
            "attribute_on", "aggregate", "select_on", "k_grid",
            "select_significance")

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.k < 1:
            raise UserError(f"--k must be >= 1, got {self.k}")
        if self.batch < 1:
            raise UserError(f"--batch must be >= 1, got {self.batch}")
        if self.refine is not None and self.refine < 0:
            raise UserError(f"--refine must be >= 0, got {self.refine}")
        if not 0 < self.fraction <= 1:
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.select_on is not None and not 0 < self.select_on < 1:
            raise UserError(f"--select-on must be in (0, 1), got {self.select_on}")
        if not 0 < self.select_significance <= 1:
            raise UserError(f"--select-significance must be in (0, 1], got {self.select_significance}")
        if self.max_correct is not None and self.max_correct < 1:
            raise UserError(f"--max-correct must be >= 1, got {self.max_correct}")
        if self.select_only and self.select_on is None:
            raise UserError("--select-only names the groups --select-on chooses K and α for; pass --select-on F")
        if self.select_only:
            from vseam.calibrate.profiles import groups_of

            known = {g for subtype in SUBTYPE_LEVEL for g in groups_of(subtype, per_subtype=True)}
            for group in self.select_only:
                if group not in known:
                    raise UserError(f"--select-only {group}: not a profile group; choose from "
                                    f"{', '.join((*SEMANTIC_LEVELS, ALL))} or <level>/<subtype>")
        if self.max_correct is not None and self.attribute_on == "eq4-pairs":
            raise UserError("--max-correct samples the questions the model answers right; with --attribute-on "
                            "eq4-pairs every edited image counts as wrong, so nothing would be sampled")

    def resolved_method(self, num_heads_total: int) -> str:
        if self.method != "auto":
            return self.method
        return "exact" if num_heads_total <= AUTO_EXACT_MAX_HEADS else "atp"

    def refine_n(self) -> int:
        return 3 * self.k if self.refine is None else self.refine

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in self.KEYS}
        out["k_grid"] = list(self.k_grid)
        if self.max_correct is not None:  # only when set: run dirs made before the option resume unchanged
            out["max_correct"] = self.max_correct
        if self.select_only:
            out["select_only"] = list(self.select_only)
        return out


@dataclasses.dataclass(frozen=True)
class CalibrateConfig:
    """One calibration run: the model, where the run lives, what stage 1 and stage 2 do."""

    model: str  # llava | instructblip | a hub id in the local cache | a checkpoint directory
    dataset: DatasetSpec
    edit: EditSpec = EditSpec()
    stage2: Stage2Config = Stage2Config()
    out: str | os.PathLike | None = None  # run directory (default runs/<dataset>-<model>)
    triples: str | None = None  # skip stage 1: Eq-4 triples from another run
    questions: str | None = None  # skip stage 1: question records (no edits)
    no_eq4_filter: bool = False
    restart: bool = False
    max_rows: int = 32
    overlap_images: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    #: the model passes on this many Ray workers (0: in this process); not part of the run's identity, so a run
    #: may resume with another worker count and gets the same profile
    workers: int = 0
    ray_address: str | None = None

    def __post_init__(self):
        if self.workers < 0:
            raise UserError(f"--workers {self.workers}: give 0 (this process) or more")
        if self.ray_address and not self.workers:
            raise UserError("--ray-address names a Ray cluster for --workers; give --workers N too")
        if self.triples and self.questions:
            raise UserError("--triples and --questions both replace stage 1; give one of them")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype}: choose one of {', '.join(DTYPES)}")

    def run_dir(self, model_ref: str) -> pathlib.Path:
        return pathlib.Path(self.out or f"runs/{self.dataset.name}-{pathlib.Path(str(model_ref)).name}")

    def run_json(self, model_ref: str) -> dict:
        """The options recorded in the run directory's config.json (a resume with others is refused)."""
        return {**self.stage2.to_json(), "dataset": self.dataset.name, "model": str(model_ref),
                "triples": self.triples, "questions": self.questions, "limit": self.dataset.limit,
                "no_eq4_filter": bool(self.no_eq4_filter)}


__all__ = ["CalibrateConfig", "DTYPES", "DatasetSpec", "EDITOR_CHOICES", "EditSpec", "METHODS", "Stage2Config",
           "loader_options"]
