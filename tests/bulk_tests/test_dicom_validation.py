"""DICOM files become PNG scans, one per frame, with the clinic's metadata and nothing identifying."""
import numpy as np
import pytest
from django.core.exceptions import ValidationError
from PIL import Image
from pydicom.data import get_testdata_file

from diagnosis.validators import patient_fields_from_dicom, read_dicom_patient, validate_dicom_file
from tests.factories import make_dicom, ramp, upload


def dicom_upload(name: str, data: bytes):
    return upload(name, data, "application/dicom")


def bundled(name: str):
    """One of pydicom's bundled test files (never downloaded: only the ones in the wheel)."""
    path = get_testdata_file(name)
    with open(path, "rb") as handle:
        return dicom_upload(name, handle.read())


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm"])
def test_pydicoms_mr_samples_are_accepted_with_their_metadata(name):
    (frame,) = validate_dicom_file(bundled(name)).frames

    assert frame.info.format == "DICOM"
    assert (frame.info.width, frame.info.height) == (64, 64)
    assert frame.name == name and frame.storage_name == name.replace(".dcm", ".png")
    dicom = frame.info.dicom
    assert dicom["modality"] == "MR"
    assert dicom["study_uid"] and dicom["series_uid"] and dicom["sop_instance_uid"]
    assert len(dicom["slice_position"]) == 3
    assert (dicom["frame"], dicom["frame_count"]) == (0, 1)


def test_the_plain_and_rle_samples_give_the_same_scan():
    plain = validate_dicom_file(bundled("MR_small.dcm")).frames[0]
    rle = validate_dicom_file(bundled("MR_small_RLE.dcm")).frames[0]
    # Same pixels, same PNG: the second upload of either would be a duplicate.
    assert plain.info.sha256 == rle.info.sha256


def test_a_ct_is_refused_with_its_reason():
    with pytest.raises(ValidationError, match="modality is CT, not MR"):
        validate_dicom_file(bundled("CT_small.dcm"))


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_synthetic_16_bit_files_are_windowed_to_8_bits(photometric):
    pixels = ramp(np.uint16, high=60000)
    (frame,) = validate_dicom_file(dicom_upload("ramp.dcm", make_dicom(pixels, photometric=photometric))).frames

    image = np.asarray(Image.open(frame.file))
    assert image.dtype == np.uint8 and image.min() <= 2 and image.max() >= 253
    dark_corner_is_dark = image[0, 0] < image[-1, -1]
    # MONOCHROME1 stores bright as low values: inverted so tissue looks the same.
    assert dark_corner_is_dark == (photometric == "MONOCHROME2")


def test_the_stored_png_carries_no_patient_data():
    (frame,) = validate_dicom_file(dicom_upload("a.dcm", make_dicom(ramp()))).frames
    data = frame.file.read()
    assert data.startswith(b"\x89PNG")
    for identifying in (b"Doe", b"Jane", b"MRN-77", b"19800102"):
        assert identifying not in data
    assert not any("Doe" in str(value) for value in frame.info.dicom.values())


def test_a_multi_frame_file_becomes_one_scan_per_frame():
    stack = np.stack([ramp(high=1000 * (i + 1)) for i in range(4)])
    result = validate_dicom_file(dicom_upload("cine.dcm", make_dicom(stack)))

    assert [f.info.dicom["frame"] for f in result.frames] == [0, 1, 2, 3]
    assert {f.info.dicom["frame_count"] for f in result.frames} == {4}
    assert [f.storage_name for f in result.frames] == [f"cine_frame{i:04d}.png" for i in range(1, 5)]
    assert result.patient["record_id"] == "MRN-77"


def test_a_dicom_without_pixels_is_refused():
    with pytest.raises(ValidationError, match="no image"):
        validate_dicom_file(dicom_upload("sr.dcm", make_dicom(ramp(), with_pixels=False)))


def test_a_header_declaring_huge_frames_is_refused_before_decoding(settings):
    settings.DIAGNOSIS_MAX_SCAN_PIXELS = 1_000_000
    data = make_dicom(ramp())
    # Rows (0028,0010) patched to 65535 in place: the pixel data no longer fits, but the
    # header check must refuse it before anything is decoded.
    patched = data.replace(b"\x28\x00\x10\x00US\x02\x00\x20\x00", b"\x28\x00\x10\x00US\x02\x00\xff\xff")
    assert patched != data
    with pytest.raises(ValidationError, match="decompression bomb"):
        validate_dicom_file(dicom_upload("bomb.dcm", patched))


def test_an_oversized_dicom_file_is_refused(settings):
    settings.DIAGNOSIS_MAX_DICOM_MB = 0
    with pytest.raises(ValidationError, match="the limit for DICOM files is 0 MB"):
        validate_dicom_file(dicom_upload("big.dcm", make_dicom(ramp())))


def test_a_truncated_dicom_is_refused_not_crashed():
    data = make_dicom(ramp())
    with pytest.raises(ValidationError):
        validate_dicom_file(dicom_upload("cut.dcm", data[: len(data) // 2]))


def test_patient_fields_are_read_for_the_patient_form():
    fields = read_dicom_patient(dicom_upload("a.dcm", make_dicom(ramp(), patient=("MRN-9", "Roe^Richard^J", "19641231", "M"))))
    assert fields["record_id"] == "MRN-9" and fields["name"] == "Roe Richard J"
    assert str(fields["birth_date"]) == "1964-12-31" and fields["sex"] == "M"


def test_unusable_patient_values_are_left_for_the_technician():
    fields = patient_fields_from_dicom({"record_id": "", "name": "", "birth_date": "19991340", "sex": "X"})
    assert fields == {}


def test_the_stored_frame_gives_the_models_the_same_input_as_the_dicom_file():
    from mlcore.preprocessing import prepare_image

    data = make_dicom(ramp(np.uint16, high=3000), photometric="MONOCHROME1", slope=2.0, window=(3000, 4000))
    (frame,) = validate_dicom_file(dicom_upload("a.dcm", data)).frames
    assert np.array_equal(prepare_image(frame.file.read()), prepare_image(data))
