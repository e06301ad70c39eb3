"""Checks an uploaded scan must pass before anything is stored.

Each check raises ValidationError with a message that names the file and says
what is wrong in words a technician can act on.
"""
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import InMemoryUploadedFile, UploadedFile
from PIL import Image, UnidentifiedImageError

# Pillow format name -> Scan.Format. Cameras and some scanners write JPEGs that
# Pillow reads as MPO (multi-picture JPEG); the first picture is an ordinary JPEG.
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG"}


@dataclass(frozen=True)
class ScanImageInfo:
    """What validation learned about a file; stored on the Scan."""

    format: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    # Scan field values read from a DICOM header (study/series UIDs, slice position...);
    # empty for PNG and JPEG.
    dicom: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ValidatedScan:
    """An uploaded file that passed validation, ready for do_add_scans.

    ``file`` is what gets stored. ``original_name`` is set when that differs from
    what the uploader sent: a DICOM frame is stored as ``IM0001.png`` but reported as
    ``IM0001.dcm``, an archive member as ``study.zip/SE1/IM0001.dcm``.
    """

    file: UploadedFile
    info: ScanImageInfo
    original_name: str = ""

    @property
    def name(self) -> str:
        return self.original_name or self.file.name

    @property
    def storage_name(self) -> str:
        return self.file.name


def _sha256(file: UploadedFile) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def validate_scan_file(file: UploadedFile) -> ValidatedScan:
    """Check that ``file`` is a PNG or JPEG that fully decodes and is within limits.

    Order matters: the byte size and the pixel count (read from the header alone)
    are checked before any pixel data is decoded, so an oversized file or a
    decompression bomb is refused without using the memory it asks for.
    """
    name = file.name or "unnamed file"
    max_mb = settings.DIAGNOSIS_MAX_SCAN_MB
    if file.size == 0:
        raise ValidationError(f"“{name}” is empty.", code="empty")
    if file.size > max_mb * 1024 * 1024:
        raise ValidationError(
            f"“{name}” is {file.size / (1024 * 1024):.1f} MB; the limit is {max_mb} MB per file.",
            code="too_large",
        )

    max_pixels = settings.DIAGNOSIS_MAX_SCAN_PIXELS
    bomb_message = (
        f"“{name}” declares more than {max_pixels:,} pixels; it is refused as a possible "
        "decompression bomb."
    )
    image_format = None
    file.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at twice its own limit, raises) while opening large
            # images; our own limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the PNG and JPEG decoders ever see the bytes: no other Pillow
            # plugin is exposed to uploads.
            with Image.open(file, formats=("PNG", "JPEG")) as image:
                image_format = image.format
                width, height = image.size
                if image_format not in ACCEPTED_FORMATS:
                    raise ValidationError(
                        f"“{name}” is a {image_format} image; only PNG and JPEG are accepted.",
                        code="format",
                    )
                if width * height > max_pixels:
                    raise ValidationError(bomb_message, code="too_many_pixels")
                # verify() checks the structure (chunk CRCs) but not all pixel data;
                # load() after reopening catches truncated or garbled data too.
                image.verify()
            file.seek(0)
            with Image.open(file, formats=("PNG", "JPEG")) as image:
                image.load()
    except Image.DecompressionBombError:
        raise ValidationError(bomb_message, code="too_many_pixels") from None
    except UnidentifiedImageError:
        raise ValidationError(
            f"“{name}” is not a PNG or JPEG image.", code="not_an_image"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValidationError(
            f"“{name}” looks like a {image_format or 'image'} file but cannot be decoded "
            f"({exc}); it may be damaged or incomplete.",
            code="corrupt",
        ) from None
    finally:
        file.seek(0)

    return ValidatedScan(
        file=file,
        info=ScanImageInfo(
            format=ACCEPTED_FORMATS[image_format],
            width=width,
            height=height,
            sha256=_sha256(file),
            size_bytes=file.size,
        ),
    )


# ---------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidatedDicom:
    """The frames of one DICOM file, each ready for do_add_scans, and the patient it names.

    ``patient`` (record_id, name, birth_date, sex) is only offered to fill in a new
    Patient or to check the file belongs to the case's patient; it is never stored
    with the scans.
    """

    frames: list[ValidatedScan]
    patient: dict


def _dicom_scan_fields(metadata: dict) -> dict:
    """mlcore.dicom metadata -> Scan field values, cut to the column sizes."""
    try:
        instance_number = int(float(metadata.get("instance_number") or ""))
    except ValueError:
        instance_number = None
    return {
        "study_uid": metadata.get("study_uid", "")[:64],
        "series_uid": metadata.get("series_uid", "")[:64],
        "sop_instance_uid": metadata.get("sop_uid", "")[:64],
        "modality": metadata.get("modality", "")[:16],
        "series_description": metadata.get("series_description", "")[:200],
        "instance_number": instance_number,
        "frame": metadata.get("frame"),
        "frame_count": metadata.get("frames"),
        "slice_position": metadata.get("slice_position"),
        "slice_location": metadata.get("slice_location"),
    }


def _check_dicom_header(file: UploadedFile, name: str) -> None:
    """Refuse a DICOM file whose pixel data would decode to more than the limits allow.

    Reads the header only (no pixel data), so a small RLE- or JPEG-compressed file
    that declares huge frames is refused before it is decoded. Files that are not
    MR are left to mlcore.dicom.read_frames, which refuses them with its own reason.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from mlcore.dicom import ACCEPTED_MODALITIES

    file.seek(0)
    try:
        header = pydicom.dcmread(file, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(
            f"“{name}” looks like DICOM but its header cannot be read ({exc.__class__.__name__}); "
            "it may be damaged or incomplete.",
            code="corrupt",
        ) from None
    finally:
        file.seek(0)
    if str(header.get("Modality", "")).strip() not in ACCEPTED_MODALITIES:
        return
    try:
        rows = int(header.get("Rows", 0) or 0)
        columns = int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        bits = int(header.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise ValidationError(
            f"“{name}” has an unreadable image size in its DICOM header.", code="corrupt"
        ) from None
    max_pixels = settings.DIAGNOSIS_MAX_SCAN_PIXELS
    decoded = rows * columns * frames * samples * max(1, (bits + 7) // 8)
    max_decoded = 4 * settings.DIAGNOSIS_MAX_DICOM_MB * 1024 * 1024
    if rows * columns > max_pixels or decoded > max_decoded:
        raise ValidationError(
            f"“{name}” declares {frames} frame(s) of {columns}×{rows} pixels "
            f"({decoded / 1024**2:.0f} MB decoded); it is refused as a possible decompression bomb.",
            code="too_many_pixels",
        )


def validate_dicom_file(file: UploadedFile, *, name: str | None = None) -> ValidatedDicom:
    """Check an MR DICOM file and turn each frame into a PNG scan ready to store.

    Each frame is rendered by ``mlcore.dicom.read_frames`` (rescale, window,
    MONOCHROME1 inversion): the same pixels the models get, so what the radiologist
    sees beside a result is what was analysed. The PNG is lossless and carries no
    DICOM tags; the clinic's metadata (UIDs, series, slice position, frame) goes on
    the Scan. Raises ValidationError for non-MR, image-less, oversized or
    undecodable files.
    """
    from mlcore.dicom import DicomError, read_frames

    name = name or file.name or "unnamed file"
    max_mb = settings.DIAGNOSIS_MAX_DICOM_MB
    if file.size > max_mb * 1024 * 1024:
        raise ValidationError(
            f"“{name}” is {file.size / (1024 * 1024):.1f} MB; the limit for DICOM files is {max_mb} MB.",
            code="too_large",
        )
    _check_dicom_header(file, name)
    try:
        slices = read_frames(file)
    except DicomError as exc:
        raise ValidationError(f"“{name}”: {exc}.", code="dicom") from None
    finally:
        file.seek(0)

    stem = PurePath(name.replace("\\", "/")).stem or "dicom"
    frames = []
    for dicom_slice in slices:
        metadata = dicom_slice.metadata
        suffix = f"_frame{metadata['frame'] + 1:04d}" if metadata.get("frames", 1) > 1 else ""
        buffer = io.BytesIO()
        dicom_slice.image.save(buffer, format="PNG")
        data = buffer.getvalue()
        png = InMemoryUploadedFile(
            io.BytesIO(data), None, f"{stem}{suffix}.png", "image/png", len(data), None
        )
        width, height = dicom_slice.image.size
        frames.append(
            ValidatedScan(
                file=png,
                original_name=name,
                info=ScanImageInfo(
                    format="DICOM",
                    width=width,
                    height=height,
                    sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data),
                    dicom=_dicom_scan_fields(metadata),
                ),
            )
        )
    patient = slices[0].patient if slices else {}
    return ValidatedDicom(frames=frames, patient=dict(patient))


def patient_fields_from_dicom(patient: dict) -> dict:
    """DICOM patient tags -> initial values for the Patient form (record_id, name, birth_date, sex).

    Values that are missing or do not parse are left out, so the technician fills
    them in; nothing here is saved until they confirm the form.
    """
    from diagnosis.models import Patient

    fields = {}
    if patient.get("record_id"):
        fields["record_id"] = patient["record_id"][:64]
    if patient.get("name"):
        fields["name"] = " ".join(patient["name"].split())[:200]
    raw_date = patient.get("birth_date", "")
    if len(raw_date) == 8 and raw_date.isdigit():
        try:
            fields["birth_date"] = date(int(raw_date[:4]), int(raw_date[4:6]), int(raw_date[6:]))
        except ValueError:
            pass
    sex = (patient.get("sex") or "").upper()[:1]
    if sex in Patient.Sex.values:
        fields["sex"] = sex
    return fields


def read_dicom_patient(file: UploadedFile) -> dict:
    """The patient a DICOM file names, as Patient form values; header only, no pixels decoded.

    Raises ValidationError if the file is not readable DICOM.
    """
    from mlcore.dicom import DicomError, read_patient

    file.seek(0)
    try:
        return patient_fields_from_dicom(read_patient(file))
    except DicomError:
        raise ValidationError(
            f"“{file.name or 'unnamed file'}” is not a readable DICOM file.", code="not_dicom"
        ) from None
    finally:
        file.seek(0)
