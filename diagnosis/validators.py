"""Checks an uploaded scan must pass before anything is stored.

Each check raises ValidationError with a message that names the file and says
what is wrong in words a technician can act on.
"""
import hashlib
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
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


@dataclass(frozen=True)
class ValidatedScan:
    """An uploaded file that passed validate_scan_file, ready for do_add_scans."""

    file: UploadedFile
    info: ScanImageInfo

    @property
    def name(self) -> str:
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
