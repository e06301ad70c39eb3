"""The one place where an image becomes model input.

Training, evaluation, the prediction command and the Celery workers all call
:func:`prepare_image`, so they can never disagree on decoding, colour handling,
geometry or scaling.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlcore.constants import IMAGE_SIZE

ImageSource = Union[str, Path, bytes, BinaryIO, Image.Image]


class UnreadableImageError(ValueError):
    """The file is not an image we can decode (corrupt, truncated, wrong type)."""


def decode_image(source: ImageSource) -> Image.Image:
    """Decode a path, bytes, file object or PIL image into a fully loaded PIL image.

    Raises UnreadableImageError with a short, user-facing reason.
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if _looks_like_dicom(source):
        from mlcore.dicom import DicomError, read_frames

        try:
            # A multi-frame file is split into one Scan per frame at upload; here the first frame is the image.
            return read_frames(source)[0].image
        except DicomError as exc:
            raise UnreadableImageError(str(exc)) from exc
    try:
        with Image.open(source) as image:
            image.load()
            # EXIF orientation matters for photos of films and phone exports.
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise UnreadableImageError("image is too large to decode safely") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"not a readable image ({exc.__class__.__name__})") from exc


def _looks_like_dicom(source) -> bool:
    """Peek at the DICOM magic without consuming the stream."""
    from mlcore.dicom import is_dicom

    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as handle:
                return is_dicom(handle.read(132))
        except OSError:
            return False
    if hasattr(source, "read") and hasattr(source, "seek"):
        position = source.tell()
        head = source.read(132)
        source.seek(position)
        return is_dicom(head)
    return False


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def stretch_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or float grayscale (common in MRI exports) stretched min..max to 8-bit "L".

    Other modes are returned unchanged. Shared by the model input and the portal's
    thumbnails, so both show the same gray levels.
    """
    if image.mode not in WIDE_MODES:
        return image
    array = np.asarray(image, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(((array - low) * scale).astype(np.uint8))


def to_grayscale_square(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """Grayscale, pad to a centred square with black, resize to ``size``.

    MRI slices are single-channel; some exports are RGB or palette images of the same
    gray values, so everything goes through 8-bit luminance first. Padding instead of
    cropping keeps the whole skull in view; black is the MRI background.
    """
    image = stretch_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    gray = image.convert("L")
    width, height = gray.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(gray, ((side - width) // 2, (side - height) // 2))
        gray = canvas
    if side != size:
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return gray


def scale_for_xception(gray: np.ndarray) -> np.ndarray:
    """uint8 HxW -> float32 HxWx3 in [-1, 1], Xception's ``preprocess_input`` scaling."""
    scaled = gray.astype(np.float32) / 127.5 - 1.0
    return np.repeat(scaled[..., None], 3, axis=-1)


def prepare_image(source: ImageSource, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode ``source`` and return the float32 (size, size, 3) array the models take."""
    gray = to_grayscale_square(decode_image(source), size)
    return scale_for_xception(np.asarray(gray))


def prepare_batch(sources: list[ImageSource], size: int = IMAGE_SIZE) -> np.ndarray:
    """Stack :func:`prepare_image` over ``sources``; raises on the first unreadable one."""
    return np.stack([prepare_image(source, size) for source in sources]) if sources else np.zeros(
        (0, size, size, 3), dtype=np.float32
    )
