"""Small helpers that build test data. Images are made here with Pillow, never copied in."""
import io
import itertools
import os
import struct
import zipfile
import zlib
from datetime import date
from pathlib import Path

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from accounts.models import User
from diagnosis.models import Case, Patient, Scan
from diagnosis.services import do_add_scans
from diagnosis.validators import validate_scan_file

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


def make_user(username: str | None = None, *, role: str = User.Role.TECHNICIAN, **fields) -> User:
    username = username or f"user{next(_counter)}"
    user = User(username=username, role=role, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


def make_patient(**fields) -> Patient:
    n = next(_counter)
    defaults = {
        "record_id": f"MRN-{n:05d}",
        "name": f"Patient {n}",
        "birth_date": date(1970, 1, 1),
        "sex": Patient.Sex.FEMALE,
    }
    return Patient.objects.create(**{**defaults, **fields})


def make_case(
    *,
    created_by: User,
    patient: Patient | None = None,
    assigned_radiologist: User | None = None,
    status: str = Case.Status.DRAFT,
    **fields,
) -> Case:
    """A case row in any status, written directly: quick bulk data with no history.
    Tests about history use the ``case`` fixture or the services instead."""
    return Case.objects.create(
        patient=patient or make_patient(),
        created_by=created_by,
        assigned_radiologist=assigned_radiologist,
        status=status,
        clinical_question=fields.pop("clinical_question", "Rule out a mass lesion."),
        **fields,
    )


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (64, 64), mode: str = "L", seed: int = 0
) -> bytes:
    """A small synthetic 'scan': a bright disc whose position depends on ``seed``.

    The seed is also written into the first pixels, so different seeds always give
    different images (the disc alone repeats every w/4 seeds, and a repeat is a
    duplicate upload).
    """
    image = Image.new(mode, size, 0)
    draw = ImageDraw.Draw(image)
    w, h = size
    offset = seed % max(1, w // 4)
    draw.ellipse((w // 8 + offset, h // 8, w // 2 + offset, h // 2), fill=200 if mode == "L" else (200, 180, 160))
    for x, value in enumerate((seed % 251 + 1, seed // 251 % 251 + 1)):
        draw.rectangle((2 * x, 0, 2 * x + 1, 1), fill=value if mode == "L" else (value, value, value))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def png_upload(name: str = "scan.png", **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes("PNG", **kwargs), content_type="image/png")


def jpeg_upload(name: str = "scan.jpg", **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes("JPEG", **kwargs), content_type="image/jpeg")


def truncated_png_upload(name: str = "broken.png") -> SimpleUploadedFile:
    """A real PNG cut off half-way, as after an interrupted copy."""
    data = image_bytes("PNG", size=(128, 128), seed=3)
    return SimpleUploadedFile(name, data[: len(data) // 2], content_type="image/png")


def text_upload(name: str = "notes.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"Patient notes, not an image.\n" * 20, content_type="image/png")


def noise_png_upload(name: str = "big.png", size: tuple[int, int] = (1200, 1000)) -> SimpleUploadedFile:
    """Random pixels do not compress, so the file is about width x height bytes."""
    image = Image.frombytes("L", size, os.urandom(size[0] * size[1]))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def bomb_png_upload(name: str = "bomb.png", side: int = 4000) -> SimpleUploadedFile:
    """A valid PNG of ``side``² black pixels: a few KB that decode to side² bytes."""
    out = io.BytesIO()
    Image.new("1", (side, side), 0).save(out, format="PNG", optimize=True)
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def huge_header_png_upload(name: str = "huge.png", side: int = 100_000) -> SimpleUploadedFile:
    """A PNG whose header claims side² pixels (10 gigapixels) with almost no data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return SimpleUploadedFile(name, data, content_type="image/png")


def make_scan(case: Case, *, uploaded_by: User, upload: SimpleUploadedFile | None = None) -> Scan:
    """Store a scan through the real validation and service."""
    upload = upload or png_upload(seed=next(_counter))
    result = do_add_scans(case=case, scans=[validate_scan_file(upload)], user=uploaded_by)
    return result.added[0]


def stored_files(root: Path) -> list[Path]:
    """Every file under ``root`` (the test's MEDIA_ROOT)."""
    root = Path(root)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ---------------------------------------------------------------------------
# DICOM and zip studies, written in memory (never copied from real data)
# ---------------------------------------------------------------------------
def make_dicom(
    pixels: np.ndarray,
    *,
    modality: str = "MR",
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    with_pixels: bool = True,
    patient: tuple[str, str, str, str] = ("MRN-77", "Doe^Jane", "19800102", "F"),
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int | None = None,
    slice_z: float = 12.5,
) -> bytes:
    """A minimal but valid DICOM Part 10 file, written by pydicom in memory.

    ``pixels`` is one frame (2-D) or several (3-D, written as a multi-frame file);
    uint16 makes a 16-bit file, uint8 an 8-bit one. ``patient`` is
    (PatientID, PatientName, PatientBirthDate, PatientSex).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.SeriesDescription = "T1 AX POST"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0.0, 0.0, slice_z]
    ds.SliceLocation = slice_z
    frames = pixels if pixels.ndim == 3 else pixels[None]
    ds.Rows, ds.Columns = frames.shape[1:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16 if pixels.dtype == np.uint16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = frames.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp(dtype=np.uint16, high: int = 4000, size: int = 32) -> np.ndarray:
    """A diagonal gray ramp from 0 to ``high``."""
    return np.linspace(0, high, size * size).reshape(size, size).astype(dtype)


def slice_pixels(index: int, *, size: int = 48, dtype=np.uint16) -> np.ndarray:
    """A synthetic 16-bit MR slice: a disc whose radius changes with ``index``, so every
    slice of a study is a different image (distinct SHA-256)."""
    yy, xx = np.mgrid[:size, :size]
    radius = size * (0.15 + 0.3 * ((index * 7) % 50) / 50)
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < radius**2
    pixels = disc * 3000 + (yy * 5 + xx * 3 + index)
    return pixels.astype(dtype)


def dicom_study(count: int, *, patient=("MRN-77", "Doe^Jane", "19800102", "F"), size: int = 48) -> list[tuple[str, bytes]]:
    """``count`` single-frame slices of one series: [(file name, DICOM bytes)]."""
    study, series = generate_uid(), generate_uid()
    return [
        (
            f"SE1/IM{i + 1:04d}.dcm",
            make_dicom(
                slice_pixels(i, size=size), patient=patient, study_uid=study, series_uid=series,
                instance_number=i + 1, slice_z=2.5 * i, window=(1500, 3000),
            ),
        )
        for i in range(count)
    ]


def zip_bytes(members: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A .zip holding ``members`` [(name, bytes)]; names are written as given, even unsafe ones."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def run_analysis(case: Case) -> Case:
    """Run the case's queued analysis to the end in this process and return the case.

    Uses the real tasks with tests.settings' eager Celery and stub predictor, so a
    case with uploaded scans ends up awaiting review with AI results, as in real use.
    """
    from diagnosis.services import enqueue_analysis
    from diagnosis.models import Prediction

    for run in case.analysis_runs.filter(completed_at__isnull=True).order_by("created"):
        enqueue_analysis(run_pk=str(run.pk), stage=Prediction.Stage.PRESENCE)
    case.refresh_from_db()
    return case
