"""DICOM MR slices to the 8-bit grayscale images the rest of the pipeline expects.

Pure pydicom + numpy (no Django, no TensorFlow), so the web layer can validate and
thumbnail DICOM uploads and the workers can feed them to the model through
``mlcore.preprocessing.decode_image``, which calls :func:`read_frames` for DICOM bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image

DicomSource = Union[str, Path, bytes, BinaryIO]

# MR only: the models were trained on MR slices. A CT or X-ray given to them would
# get a confident but meaningless answer.
ACCEPTED_MODALITIES = frozenset({"MR"})


class DicomError(ValueError):
    """Not a DICOM file we can use; the message is shown to the uploader."""


@dataclass
class DicomSlice:
    """One frame, ready for the models, with the metadata the clinic keeps on the Scan."""

    image: Image.Image  # mode "L"
    metadata: dict = field(default_factory=dict)
    patient: dict = field(default_factory=dict)  # offered to fill a Patient; never stored on the Scan


def is_dicom(head: bytes) -> bool:
    """True for a DICOM Part 10 file: 128-byte preamble followed by 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _window(pixels: np.ndarray, dataset) -> np.ndarray:
    """Rescale to real values, apply the stored VOI window (or a robust automatic one) -> uint8."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        # The first stored window (scanners may store several presets).
        center = float(np.ravel([dataset.WindowCenter])[0])
        width = float(np.ravel([dataset.WindowWidth])[0])
        low, high = center - width / 2, center + width / 2
    elif "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
        low, high = float(values.min()), float(values.max())
    elif values.size:
        # No window stored: ignore the extreme 0.5% on each side (hot pixels, padding).
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    else:
        low = high = 0.0
    span = high - low
    scaled = (np.clip(values, low, high) - low) / span * 255.0 if span > 0 else np.zeros_like(values)
    return np.rint(scaled).astype(np.uint8)


def _text(dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _patient(dataset) -> dict:
    return {
        "record_id": _text(dataset, "PatientID"),
        "name": _text(dataset, "PatientName").replace("^", " ").strip(),
        "birth_date": _text(dataset, "PatientBirthDate"),
        "sex": _text(dataset, "PatientSex"),
    }


def read_patient(source: DicomSource) -> dict:
    """The patient a DICOM file names (record_id, name, birth_date YYYYMMDD, sex).

    Reads the header only, so it is cheap even for a large multi-frame file.
    Raises DicomError if the file is not readable DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        dataset = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(f"not a readable DICOM file ({exc.__class__.__name__})") from exc
    return _patient(dataset)


def read_frames(source: DicomSource) -> list[DicomSlice]:
    """Decode every frame of an MR DICOM file.

    Applies rescale slope/intercept, the stored window (else a 0.5-99.5 percentile
    window), inverts MONOCHROME1, and handles 8-16 bit and multi-frame data.
    Raises DicomError with a user-facing reason otherwise.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        dataset = pydicom.dcmread(source)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(f"not a readable DICOM file ({exc.__class__.__name__})") from exc

    modality = _text(dataset, "Modality")
    if modality not in ACCEPTED_MODALITIES:
        raise DicomError(f"DICOM modality is {modality or 'missing'}, not MR: only MR brain slices can be analysed")
    if "PixelData" not in dataset:
        raise DicomError("DICOM file holds no image (no pixel data)")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported or broken encodings
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown")
        raise DicomError(f"cannot decode the DICOM pixel data (transfer syntax: {name}): {exc}") from exc

    photometric = _text(dataset, "PhotometricInterpretation")
    frames_count = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples > 1:
        # Colour MR exports (rare): use luminance, as for RGB PNGs.
        pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    frames = pixels if frames_count > 1 else pixels[None, ...]
    if frames.ndim != 3:
        raise DicomError(f"unexpected DICOM pixel layout {pixels.shape}")

    positions = dataset.get("PerFrameFunctionalGroupsSequence")
    common = {
        "study_uid": _text(dataset, "StudyInstanceUID"),
        "series_uid": _text(dataset, "SeriesInstanceUID"),
        "sop_uid": _text(dataset, "SOPInstanceUID"),
        "modality": modality,
        "series_description": _text(dataset, "SeriesDescription"),
        "instance_number": _text(dataset, "InstanceNumber"),
        "bits_stored": int(dataset.get("BitsStored", dataset.get("BitsAllocated", 8)) or 8),
        "photometric": photometric,
        "frames": frames_count,
    }
    patient = _patient(dataset)
    slices = []
    for index, frame in enumerate(frames):
        gray = _window(frame, dataset)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        metadata = dict(common, frame=index)
        position = dataset.get("ImagePositionPatient")
        location = dataset.get("SliceLocation")
        if positions is not None and index < len(positions):
            plane = positions[index].get("PlanePositionSequence")
            if plane:
                position = plane[0].get("ImagePositionPatient", position)
        metadata["slice_position"] = [float(v) for v in position] if position is not None else None
        metadata["slice_location"] = float(location) if location not in (None, "") else None
        slices.append(DicomSlice(image=Image.fromarray(gray), metadata=metadata, patient=patient))
    return slices
