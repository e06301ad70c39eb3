"""DICOM MR slices reach the models as the expected 8-bit grayscale image."""
import io

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mlcore.dicom import DicomError, is_dicom, read_frames
from mlcore.preprocessing import UnreadableImageError, prepare_image


def make_dicom(pixels: np.ndarray, *, modality="MR", photometric="MONOCHROME2", slope=1.0, intercept=0.0,
               window=None, with_pixels=True) -> bytes:
    """A minimal but valid DICOM Part 10 file, written by pydicom in memory."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.SeriesDescription = "T1 AX POST"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "MRN-77", "Doe^Jane", "19800102", "F"
    ds.ImagePositionPatient = [0.0, 0.0, 12.5]
    ds.SliceLocation = 12.5
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


def ramp(dtype=np.uint16, high=4000):
    return np.linspace(0, high, 32 * 32).reshape(32, 32).astype(dtype)


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
