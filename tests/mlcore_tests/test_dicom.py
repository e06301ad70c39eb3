"""DICOM MR slices reach the models as the expected 8-bit grayscale image."""
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from mlcore.dicom import DicomError, is_dicom, read_frames, read_patient
from mlcore.preprocessing import UnreadableImageError, prepare_image
from tests.factories import make_dicom, ramp


def test_pydicoms_mr_sample_is_read_with_its_metadata():
    (slice_,) = read_frames(get_testdata_file("MR_small.dcm"))
    assert slice_.image.mode == "L" and slice_.image.size == (64, 64)
    assert slice_.metadata["modality"] == "MR" and slice_.metadata["series_uid"]
    assert slice_.metadata["slice_position"] is not None
    assert prepare_image(get_testdata_file("MR_small.dcm")).shape == (224, 224, 3)


def test_rle_compressed_mr_decodes_like_the_uncompressed_file():
    plain = np.asarray(read_frames(get_testdata_file("MR_small.dcm"))[0].image)
    rle = np.asarray(read_frames(get_testdata_file("MR_small_RLE.dcm"))[0].image)
    assert np.array_equal(plain, rle)


def test_a_ct_scan_is_refused_because_the_models_only_know_mr():
    with pytest.raises(DicomError, match="modality is CT"):
        read_frames(get_testdata_file("CT_small.dcm"))


def test_16_bit_monochrome2_uses_the_full_gray_range():
    image = np.asarray(read_frames(make_dicom(ramp()))[0].image)
    assert image.min() <= 2 and image.max() >= 253
    assert image[0, 0] < image[-1, -1]  # dark stays dark


def test_monochrome1_is_inverted_so_tissue_looks_the_same():
    normal = np.asarray(read_frames(make_dicom(ramp()))[0].image).astype(int)
    inverted = np.asarray(read_frames(make_dicom(ramp(), photometric="MONOCHROME1"))[0].image).astype(int)
    assert np.abs((255 - inverted) - normal).max() <= 1


def test_rescale_and_stored_window_are_applied():
    # Stored values 0..4000 with slope 0.5 -> 0..2000; window 1000 +/- 500 -> ramp middle.
    image = np.asarray(read_frames(make_dicom(ramp(), slope=0.5, window=(1000, 1000)))[0].image)
    values = ramp() * 0.5
    assert image[values <= 500].max() == 0
    assert image[values >= 1500].min() == 255


def test_8_bit_data_is_accepted():
    image = np.asarray(read_frames(make_dicom(ramp(np.uint8, 200)))[0].image)
    assert image.max() >= 253


def test_every_frame_of_a_multi_frame_file_is_returned():
    stack = np.stack([ramp(high=1000 * (i + 1)) for i in range(3)])
    slices = read_frames(make_dicom(stack))
    assert [s.metadata["frame"] for s in slices] == [0, 1, 2]
    assert slices[0].patient == {"record_id": "MRN-77", "name": "Doe Jane", "birth_date": "19800102", "sex": "F"}


def test_a_dicom_without_pixels_is_refused():
    with pytest.raises(DicomError, match="no image"):
        read_frames(make_dicom(ramp(), with_pixels=False))


def test_garbage_with_a_dicom_preamble_is_a_clear_error_from_the_preprocessor():
    data = make_dicom(ramp())
    assert is_dicom(data)
    with pytest.raises(UnreadableImageError):
        prepare_image(data[:300])


def test_read_patient_reads_only_the_patient_tags():
    assert read_patient(make_dicom(ramp())) == {
        "record_id": "MRN-77", "name": "Doe Jane", "birth_date": "19800102", "sex": "F",
    }
    with pytest.raises(DicomError):
        read_patient(b"not dicom at all" * 20)
