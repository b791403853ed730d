"""Shared fixtures: tiny real-layout checkpoints (built once per session by the project's own builder)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> pathlib.Path:
    from vseam.core.toy_checkpoints import build

    out = tmp_path_factory.mktemp("tiny-llava")
    build("llava", out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_instructblip_dir(tmp_path_factory) -> pathlib.Path:
    from vseam.core.toy_checkpoints import build

    out = tmp_path_factory.mktemp("tiny-instructblip")
    build("instructblip", out, seed=0)
    return out


@pytest.fixture(scope="session", params=["llava", "instructblip"])
def tiny_dir(request, tiny_llava_dir, tiny_instructblip_dir) -> pathlib.Path:
    return {"llava": tiny_llava_dir, "instructblip": tiny_instructblip_dir}[request.param]


def random_image(seed: int, size=(96, 80)) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return path
