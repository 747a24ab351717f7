"""Shared fixtures: tiny models built from the real configs, and tiny data made by the tests."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from omnimae.config.build import build_model
from omnimae.config.compose import compose

TINY = ["model=vit_tiny", "experiment=none", "trainer=debug"]


def tiny_cfg(*overrides: str, img_size: int = 16, patch: int = 4, chans: int = 3):
    return compose(
        "pretrain",
        TINY
        + [
            f"modalities.image.adapter.img_size={img_size}",
            f"modalities.image.adapter.patch_size={patch}",
            f"modalities.image.adapter.in_chans={chans}",
            *overrides,
        ],
    )


@pytest.fixture(autouse=True)
def machine_choices(tmp_path_factory, monkeypatch):
    """No test writes the user's cache, or decides its precision by timing this machine (tests of
    that measurement inject their timings); the thread count a run applies is undone after each test."""
    monkeypatch.setenv("OMNIMAE_CACHE", str(tmp_path_factory.mktemp("omnimae_cache")))
    monkeypatch.setenv("OMNIMAE_CPU_BF16", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_cfg():
    """tiny_cfg(*overrides, img_size=16, patch=4, chans=3): the real composed config, tiny."""
    return tiny_cfg


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


@pytest.fixture
def image_folder(tmp_path):
    """An ImageFolder layout of small RGB PNGs cut from a real photo (scikit-image's astronaut)."""
    from PIL import Image
    from skimage.data import astronaut

    photo = astronaut()  # [512, 512, 3] uint8
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(12):
            y, x = rng.integers(0, 512 - 40, size=2)
            Image.fromarray(photo[y : y + 40, x : x + 36]).save(tmp_path / cls / f"{i}.png")
    return tmp_path
