"""Training-time augmentation of MRI slices (never used at inference).

Slices in the wild differ in position, size, in-plane rotation and contrast (scanner,
sequence, export window); these transforms cover that range without changing what
the slice shows. They act on the padded grayscale square from
``preprocessing.to_grayscale_square``, before the same Xception scaling as always.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def augment_slice(gray: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random rotation (+/-12 deg), zoom (0.9-1.12), shift (+/-6%), mirror and gamma (0.8-1.25)."""
    size = gray.size[0]
    if rng.random() < 0.5:
        gray = ImageOps.mirror(gray)
    angle = float(rng.uniform(-12, 12))
    scale = float(rng.uniform(0.9, 1.12))
    dx, dy = (float(v) for v in rng.uniform(-0.06, 0.06, 2) * size)
    # Inverse affine map about the centre: output pixel -> input pixel.
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
    cx = cy = size / 2
    matrix = (cos, sin, cx - cos * cx - sin * cy - dx, -sin, cos, cy + sin * cx - cos * cy - dy)
    gray = gray.transform((size, size), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR,
                          fillcolor=0)
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    lut = [min(255, int(round(255 * (v / 255) ** gamma))) for v in range(256)]
    return gray.point(lut)
