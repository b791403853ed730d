"""The model organism: a tiny LLaVA-1.5 trained here on the `shapes` world (weights committed in `weights/`).

It exists so the whole V-SEAM loop (calibrate -> serve -> evaluate) runs offline on a CPU with a model that
actually perceives something: see `MODEL_CARD.md` for its recipe and held-out accuracy per subtype.
"""

from __future__ import annotations

import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
#: the checkpoint the committed weights were fine-tuned from (preset "v2-staged", uniform world; `recipe.py`)
PARENT_WEIGHTS_DIR = PACKAGE_DIR / "weights-v2-staged"
#: where a relative `init_from` path is looked up when it is not found from the working directory
REPO_ROOT = PACKAGE_DIR.parents[1]
CARD_JSON = PACKAGE_DIR / "card.json"
MODEL_CARD = PACKAGE_DIR / "MODEL_CARD.md"


def weights_dir() -> pathlib.Path:
    """The committed checkpoint directory (llava-hf layout)."""
    if not (WEIGHTS_DIR / "config.json").exists():
        raise FileNotFoundError(f"{WEIGHTS_DIR}: the model organism's weights are missing (train them with "
                                "`python -m vseam.organism.train`)")
    return WEIGHTS_DIR
