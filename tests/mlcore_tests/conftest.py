"""Fixtures for the ML tests: real scans from the shared folder, synthetic images otherwise."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("NEUROSCAN_DATA_DIR", REPO.parent / "shared" / "data" / "brain-mri" / "train"))
PRETRAINED = Path(
    os.environ.get("NEUROSCAN_PRETRAINED", REPO.parent / "shared" / "pretrained" / "xception_imagenet_notop.weights.h5")
)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI scans not found at {SHARED_DATA} (set NEUROSCAN_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture
def pretrained_weights() -> Path:
    if not PRETRAINED.is_file():
        pytest.skip(f"ImageNet Xception weights not found at {PRETRAINED} (set NEUROSCAN_PRETRAINED)")
    return PRETRAINED


def synthetic_slice(seed: int, size: int = 96, mode: str = "L") -> Image.Image:
    """A brain-like synthetic slice: an ellipse with a seeded blob pattern on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    head = ((xx / 0.42) ** 2 + (yy / 0.36) ** 2) < 1
    texture = np.zeros((size, size))
    for _ in range(6):
        cy, cx = rng.uniform(-0.3, 0.3, 2)
        texture += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.002, 0.02)) * rng.uniform(0.3, 1)
    pixels = np.clip((0.35 + texture) * head * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    return image.convert(mode) if mode != "L" else image


@pytest.fixture
def make_dataset(tmp_path):
    """Write a class-per-folder dataset of distinct synthetic slices, ``per_class`` each."""

    def make(per_class: int = 4, folders=("glioma", "meningioma", "notumor", "pituitary"), size: int = 96) -> Path:
        root = tmp_path / "dataset"
        for c, folder in enumerate(folders):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                synthetic_slice(1000 * c + i, size).save(root / folder / f"{i:03d}.png")
        return root

    return make


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs real TensorFlow training or inference (seconds to minutes)")
