"""The defaults the paper fixes and vseam keeps, one home for each (the CLI help and the stages read them here)."""

from __future__ import annotations

#: top-K positive and negative heads per profile (paper: K = 10)
DEFAULT_K = 10
#: K values tried when K is chosen on held-out calibration questions (`calibrate --select-on`)
DEFAULT_K_GRID: tuple[int, ...] = (1, 2, 4, 10)
#: strengths α tried there (α = 0 is the unedited model; α = 1 is Eq 10)
STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: heads above which `--method auto` screens with attribution patching instead of the exact engine
AUTO_EXACT_MAX_HEADS = 256
#: questions per attribution chunk (a resumed run batches the same way)
DEFAULT_BATCH = 4
#: below this many incorrectly answered inputs a group's negative heads rest on thin evidence (the report warns)
MIN_INCORRECT = 30
#: paper Table 18: bootstrap folds x items per fold; paired-bootstrap resamples of the CI
BOOTSTRAP_FOLDS, BOOTSTRAP_FOLD_SIZE = 1000, 100
CI_RESAMPLES = 10_000
